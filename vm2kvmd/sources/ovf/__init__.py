"""OVF packages read from the host: an ``.ovf`` next to its files, an ``.ova`` read in place or extracted."""
