"""The recovery handler: relaunches interrupted runs, ends runs past their limits (no AWS in its logic)."""
