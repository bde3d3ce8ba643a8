"""Device simulators speaking the real protocols on real ports and ptys, for tests and for
integrators building a lane without hardware. Written from the protocol descriptions, never by
importing a driver's parser: a shared bug would otherwise hide on both sides."""
