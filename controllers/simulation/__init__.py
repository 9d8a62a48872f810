"""Trace-driven simulation of a ModelDeployment under the live autoscaler's policy."""
