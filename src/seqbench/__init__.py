"""seqbench: which recurrent cell, tokenizer and decoding strategy should I use, and why?

Tensor layout everywhere in this package is batch-first: sequences are ``(B, T, ...)``;
recurrent states follow torch's convention ``(num_layers * num_directions, B, H)``.
"""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """``${cwd:}``: the launch directory, usable before Hydra's runtime config exists
    (a multirun sweeper resolves paths before any job has started)."""
    import os

    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


_register_resolvers()
