"""tickpipe.processors"""
