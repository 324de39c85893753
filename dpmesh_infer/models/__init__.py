"""The networks: each a <Name>Config, an nn.Module and its strict component io."""
