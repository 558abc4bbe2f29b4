//! Pod networking for berth (network namespaces, CNI plugins, the built-in bridge).
//!
//! Not built yet: see the pod networking issue. Until then berthd reports NetworkReady=false.
