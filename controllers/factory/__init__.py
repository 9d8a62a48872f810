"""The factory in a box: a local AI factory on the real control plane (docs/factory.md)."""
