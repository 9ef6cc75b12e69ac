"""wsgid.interfaces: the plugin interfaces of wsgid 0.7."""
