"""Phony Windows guests (issue 13): ``layout`` (what each holds), ``hives`` (registry content from a
minimal regf hive, filled through hivex), ``build`` (the disk images, one appliance launch)."""
