"""The Tokenworks API: pydantic models (the source of truth) and the CRD YAML generated from them."""
