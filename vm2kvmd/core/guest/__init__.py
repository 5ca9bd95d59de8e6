"""Guest edit planning: what inspection found (``info``) and the pure text edits and commands that
convert a guest, one subpackage per OS family (``linux`` now, ``windows`` next).  The appliance
side that applies them is ``vm2kvmd.convert``."""
