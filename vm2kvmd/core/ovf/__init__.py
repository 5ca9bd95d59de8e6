"""OVF descriptors (``.ovf``, the first member of an ``.ova``): the envelope, and its virtual
hardware turned into a ``SourceVM``."""
