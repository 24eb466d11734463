"""Using a trained system on new videos.

- :mod:`avsc.inference.bundle`: backbones + fusion model + feature config in one portable folder
  (its format and :func:`~avsc.inference.bundle.load_bundle`); :mod:`avsc.inference.bundle_writer`
  makes one.
- :mod:`avsc.inference.predict`: classify any video with a bundle (:class:`~avsc.inference.predict.Predictor`),
  giving a :class:`~avsc.inference.prediction.Prediction`; the windows a video is cut into
  (:mod:`avsc.inference.windows`); the backbones run as traced graphs (:mod:`avsc.inference.graph_runner`).
- :mod:`avsc.inference.inspect`: what the networks see of one video (``avsc inspect``).
"""
