//! Mutual TLS for cluster traffic, derived from the cluster secret.
//!
//! Every node derives the same cluster CA from the cluster name and secret:
//! an Ed25519 key from a BLAKE3-derived seed and a certificate with fixed
//! fields, so the CA is byte-identical everywhere without being distributed.
//! Each node then makes a fresh key of its own and a certificate signed by
//! that CA. Both sides of a QUIC connection must present a certificate that
//! chains to the CA, and both offer the ALPN `starling/1/<cluster name>`, so a
//! node with the wrong secret or the wrong cluster name fails the handshake
//! and can send nothing that is acted on. TLS 1.3 only; no 0-RTT (a replayed
//! early-data packet could replay a write).
//!
//! Boundary: this module builds configs; it opens no sockets.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

/// The name every node's certificate carries and every client expects.
pub const SERVER_NAME: &str = "node.starling.cluster";

/// PKCS#8 v1 header of an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// TLS configuration for one node's cluster endpoint.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// Accepts connections from nodes with a CA-signed certificate.
    pub server: Arc<rustls::ServerConfig>,
    /// Connects to nodes, presenting this node's certificate.
    pub client: Arc<rustls::ClientConfig>,
}

/// The ALPN protocol id for `cluster_name`.
pub fn alpn(cluster_name: &str) -> Vec<u8> {
    format!("starling/1/{cluster_name}").into_bytes()
}

impl ClusterTls {
    /// Derives the cluster CA from `cluster_name` and `secret` and issues a
    /// fresh certificate for this node.
    pub fn from_secret(cluster_name: &str, secret: &str) -> anyhow::Result<ClusterTls> {
        let mut material = Vec::with_capacity(cluster_name.len() + secret.len() + 1);
        material.extend_from_slice(cluster_name.as_bytes());
        material.push(0);
        material.extend_from_slice(secret.as_bytes());
        let seed = blake3::derive_key("starling cluster CA key v1", &material);
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let ca_key =
            KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
                .context("deriving the cluster CA key")?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("starling cluster {cluster_name}"),
        );
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Fixed validity and serial: every node must derive the same bytes.
        ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        ca_params.serial_number = Some(SerialNumber::from_slice(&seed[..16]));
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("making the cluster CA")?;

        let node_key = KeyPair::generate_for(&PKCS_ED25519).context("making the node key")?;
        let mut node_params = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
        node_params.distinguished_name = DistinguishedName::new();
        node_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        node_params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let issuer = Issuer::new(ca_params, ca_key);
        let node_cert = node_params
            .signed_by(&node_key, &issuer)
            .context("signing the node certificate")?;

        let ca_der: CertificateDer<'static> = ca_cert.der().clone();
        let chain = vec![node_cert.der().clone(), ca_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der()));
        let mut roots = RootCertStore::empty();
        roots.add(ca_der).context("trusting the cluster CA")?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let alpn = alpn(cluster_name);

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("building the client verifier")?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .context("server certificate")?;
        server.alpn_protocols = vec![alpn.clone()];
        server.max_early_data_size = 0;

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .context("client certificate")?;
        client.alpn_protocols = vec![alpn];
        client.enable_early_data = false;

        Ok(ClusterTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}
