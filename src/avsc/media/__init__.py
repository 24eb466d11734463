"""Stage 1: from a video file to PCM audio and RGB frames, with ffmpeg.

- :mod:`avsc.media.ffmpeg`: which ffmpeg binary avsc runs.
- :mod:`avsc.media.probe`: what a file holds (streams, size, frame rate, audio layout).
- :mod:`avsc.media.decode`: the audio as float PCM, frames at a fixed rate, scaled and cropped.
- :mod:`avsc.media.encode`: writing WAV files and H.264/AAC clips (demo data, tests).
"""
