"""The trio shell: sockets, servers, drivers and the node that owns them."""
