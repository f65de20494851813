"""Pre-training what ships with dessam: the default teacher (`teacher`) and a whole DES-SAM model on it
(`model`), from a corpus of public nucleus datasets (`dessam.data.corpus`)."""
