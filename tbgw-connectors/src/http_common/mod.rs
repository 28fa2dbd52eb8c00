//! Pieces shared by the HTTP connectors (`request` and `rest`): the hyper client with TLS,
//! basic authentication and downlink as outgoing HTTP requests.
#![allow(dead_code)] // each connector uses a different subset

pub mod auth;
pub mod call;
pub mod client;
pub mod tls;
