//! Helpers for tabby's end-to-end tests: network namespaces that clean up after themselves,
//! real BGP peers (BIRD 2, GoBGP) and the `tabby` binary run inside them.
