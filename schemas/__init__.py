"""tickpipe.schemas"""
