"""Generated wire contract (see scripts/gen_proto.py)."""
