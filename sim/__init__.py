"""bitswarm.sim"""
