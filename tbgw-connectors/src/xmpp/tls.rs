//! XMPP over TLS that trusts the CA certificates of `server.ca_cert` (a tbgw extension) instead
//! of the system's roots: tokio-xmpp's own STARTTLS and direct-TLS connectors always build
//! their rustls configuration from the system store, so a private CA could otherwise only be
//! trusted through `SSL_CERT_FILE`, which replaces the roots of the whole process.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use sasl::common::ChannelBinding;
use tbgw::tls::rustls;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::tls_common::TlsConnectorError;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    initiate_stream, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement,
};
use tokio_xmpp::Error;

/// A tokio-xmpp [`ServerConnector`]: TCP to the resolved address, then TLS — after
/// `<starttls/>` or from the first byte — checked against the given rustls configuration
/// (its roots and the JID's domain as the server name).
#[derive(Debug, Clone)]
pub struct CaTlsConnector {
    dns: DnsConfig,
    config: Arc<rustls::ClientConfig>,
    direct: bool,
}

impl CaTlsConnector {
    /// STARTTLS on a client port (`direct` false) or TLS from the first byte (`direct` true).
    pub fn new(dns: DnsConfig, config: Arc<rustls::ClientConfig>, direct: bool) -> Self {
        CaTlsConnector {
            dns,
            config,
            direct,
        }
    }

    /// Sends `<starttls/>` on a fresh stream and waits for `<proceed/>`; the TCP stream to
    /// start TLS on.
    async fn starttls(
        &self,
        tcp: TcpStream,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<TcpStream, Error> {
        let header = StreamHeader {
            to: Some(Cow::Borrowed(jid.domain().as_str())),
            from: None,
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        let (features, mut stream): (_, XmppStream<BufStream<TcpStream>>) =
            pending.recv_features().await?;
        if !features.can_starttls() {
            return Err(Error::Protocol(ProtocolError::NoTls));
        }
        stream
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await?;
        while let Some(item) = stream.next().await {
            match item.map(|el| el.into_read_error()) {
                Ok(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => {
                    return Ok(stream.into_inner().into_inner());
                }
                Ok(Ok(_)) | Err(ReadError::SoftTimeout) | Ok(Err(ReadError::SoftTimeout)) => {}
                Err(ReadError::HardError(e)) | Ok(Err(ReadError::HardError(e))) => {
                    return Err(e.into())
                }
                Err(ReadError::ParseError(e)) | Ok(Err(ReadError::ParseError(e))) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e).into())
                }
                Err(ReadError::StreamFooterReceived) | Ok(Err(ReadError::StreamFooterReceived)) => {
                    break
                }
            }
        }
        Err(Error::Disconnected)
    }
}

impl ServerConnector for CaTlsConnector {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), Error> {
        let mut tcp = self.dns.resolve().await?;
        if !self.direct {
            tcp = self.starttls(tcp, jid, ns, timeouts).await?;
        }
        let name = rustls::pki_types::ServerName::try_from(jid.domain().as_str().to_owned())
            .map_err(TlsConnectorError::DnsNameError)?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(Error::Io)?;
        // RFC 9266 channel binding for SCRAM-PLUS where TLS 1.3 offers it.
        let binding = match tls.get_ref().1.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => tls
                .get_ref()
                .1
                .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .map(ChannelBinding::TlsExporter)
                .map_err(TlsConnectorError::Tls)?,
            _ => ChannelBinding::None,
        };
        let bare = jid.to_bare();
        let header = StreamHeader {
            to: Some(Cow::Borrowed(jid.domain().as_str())),
            from: self.direct.then(|| Cow::Borrowed(bare.as_str())),
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tls), ns, header, timeouts).await?;
        Ok((pending, binding))
    }
}
