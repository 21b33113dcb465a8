"""seqbench: which recurrent cell, tokenizer and decoding strategy should I use, and why?

Tensor layout everywhere in this package is batch-first: sequences are ``(B, T, ...)``;
recurrent states follow torch's convention ``(num_layers * num_directions, B, H)``.
"""

__version__ = "0.1.0"
