"""Stage 1: from a video file to PCM audio and RGB frames, with ffmpeg.

- :mod:`avsc.media.ffmpeg`: which ffmpeg binary avsc runs, the one runner, its failure markers.
- :mod:`avsc.media.ffmpeg_report`: reading ffmpeg's stream report and packet table.
- :mod:`avsc.media.probe`: what a file holds, which streams avsc decodes, the true timeline.
- :mod:`avsc.media.decode`: the audio as float PCM, frames at a fixed rate, as a player presents them;
  digital-silence check.
- :mod:`avsc.media.encode`: writing WAV files and H.264/AAC clips (demo data, tests).
"""
