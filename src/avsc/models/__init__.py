"""The networks: builders return uncompiled ``keras.Model`` objects.

- :mod:`avsc.models.backbones`: the five Phase I backbones (residual-inception audio networks,
  InceptionV3 and ConvNeXtTiny) and their embedding heads.
- :mod:`avsc.models.fusion`: the fusion layers of eqs. 1-3 and the Phase II model (f1-f6).
- :mod:`avsc.models.losses`: the KL-divergence loss of eq. 4.
- :mod:`avsc.models.saving`: atomic ``.keras`` saves.
"""
