"""Experiments built on the library, outside its core (the core never imports
them): the paper's shared settings for configs/, the CPU demo and section 6's
PEFT sweep."""
