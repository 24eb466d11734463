"""Stages 3-5: Phase I (backbones), their embeddings, Phase II (fusion).

- :mod:`avsc.training.sampling`: what an epoch reads, in which order, and its mixup draws (NumPy).
- :mod:`avsc.training.streams`: tf.data input pipelines over the feature store, one feature each.
- :mod:`avsc.training.numpy_stream`: the same batches as NumPy arrays, without TensorFlow.
- :mod:`avsc.training.mixup`: mixup for both phases; Phase I's inside the model (``with_mixup``).
- :mod:`avsc.training.checkpoints`: training state at a durable location (a folder or ``s3://``).
- :mod:`avsc.training.backbone`: train one backbone, checkpointed every epoch, selected on val.
- :mod:`avsc.training.embeddings`: FC(1024)/FC(10) embeddings of every clip, to Parquet.
- :mod:`avsc.training.fusion`: train the fusion models on the frozen embeddings.
"""
