from torch import nn


def orthogonal_init(module):
    """Orthogonal kernels and zero biases for every convolution and linear layer
    (paper, Methods)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.orthogonal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
