"""bitswarm.train"""
