"""tickpipe.producers"""
