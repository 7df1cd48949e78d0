"""The Flax NNX decoder family: model, parameter and FLOP accounting, shape ladder, sampling."""
