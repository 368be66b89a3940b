"""Model-written programs run and judged where they cannot reach the answers or the verdict (standard library
only on the sandbox's side)."""
