"""The Autopilot unassign webhook's logic, importable without azure.functions."""
