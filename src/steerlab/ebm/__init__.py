"""Energy-based (implicit) policies: networks, InfoNCE, Langevin / DFO samplers."""
