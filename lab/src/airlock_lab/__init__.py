"""The lab: the blog's air-gap topology on one host, and the simulated upstream it pulls from."""
