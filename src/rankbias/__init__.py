"""rankbias: test published claims about weight decay's low-rank bias, end to end."""

__version__ = "0.1.0"
