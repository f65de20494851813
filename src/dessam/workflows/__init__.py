"""End-to-end runs a command performs: the demo (`dessam demo`) and the speed bench (`dessam bench`)."""
