"""bitswarm.hw"""
