"""kubetune's reference PyTorch trainer: the classic knobs, reported through kubetune.trial."""
