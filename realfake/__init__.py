"""Tell real photographs from AI-generated images: data stages, a classifier, a web app."""

import os

# TensorFlow enables oneDNN by default only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX;
# elsewhere its Eigen convolution gradients make ResNet101 training several times slower.
# setdefault keeps an explicit choice of the user's, including TF_ENABLE_ONEDNN_OPTS=0.
# Importing this package before TensorFlow is what makes every entry point fast by default.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
