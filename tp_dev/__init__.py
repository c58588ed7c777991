"""Developer tooling, not part of a role: the demo (tp-demo), local networks of real processes on 127.0.0.1
(tests, benchmarks, the demo) and the process helpers they use."""
