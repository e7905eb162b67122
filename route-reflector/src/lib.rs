//! tabby-route-reflector: the standalone route reflector process.
//!
//! It will take its clients from the datastore and reflect routes between them (RFC 4456)
//! using `tabby-bgp`'s RIB; it never touches the dataplane. Built by the bgp-rib and
//! reflector-deploy issues.
