"""Using a trained system on new videos.

- :mod:`avsc.inference.bundle`: backbones + fusion model + feature config in one portable folder.
- :mod:`avsc.inference.predict`: classify any video with a bundle.
"""
