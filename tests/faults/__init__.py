"""Fault-injection tests of the validation stage (marker ``faults``)."""
