import sys

from avsc.cli import main

sys.exit(main())
