"""The named choices of a diffusion run, torch-free so that `variational --help` stays fast."""

SCHEDULES = ("linear", "cosine")
PARAMETERIZATIONS = ("eps", "x0", "v")
VARIANCES = ("small", "large", "learned")  # beta-tilde_t, beta_t, learned interpolation
OBJECTIVES = ("simple", "vlb", "hybrid")
BINARIZE = ("none", "static", "dynamic")  # the modes of variational.data.binarize
SAMPLERS = ("ddpm", "ddim")
PRESETS = ("tiny", "small", "base")  # the U-Net sizes of variational.diffusion.unet.PRESETS
