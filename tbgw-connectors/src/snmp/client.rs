//! The client side: one agent, its sessions (one per community, or the v3 user), a timeout
//! and resends per request, and upstream's eleven methods on top of GET, GETNEXT, GETBULK and
//! SET.
//!
//! snmp2's [`AsyncSession`] has no timeout and rejects a late answer to an abandoned request
//! (`RequestIdMismatch`) instead of skipping it, so after a timeout or any transport error the
//! session (and its UDP socket) is dropped and the next request opens a new one: a late answer
//! then reaches a closed port, never the next request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use snmp2::{AsyncSession, Oid};

use super::downlink::SetValue;
use super::uplink::{varbinds, MethodResult, SnmpValue, VarBind};

/// Walks stop after this many varbinds (a misbehaving agent cannot make a walk endless).
pub const MAX_WALK_VARBINDS: usize = 100_000;

/// The SNMP version of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SNMPv1.
    V1,
    /// SNMPv2c.
    V2c,
    /// SNMPv3 (USM).
    V3,
}

impl Version {
    /// Parses `v1`, `v2c`, `v3` (also `1`, `2`, `2c`, `v2`, `3`), case-insensitively.
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Some(Version::V1),
            "v2c" | "v2" | "2c" | "2" => Some(Version::V2c),
            "v3" | "3" => Some(Version::V3),
            _ => None,
        }
    }
}

/// Where an agent is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Protocol version.
    pub version: Version,
    /// Default community (v1/v2c).
    pub community: String,
    /// v3 user (None for v1/v2c).
    pub security: Option<snmp2::v3::Security>,
    /// Wait for one answer.
    pub timeout: Duration,
    /// Resends after a timeout.
    pub retries: u32,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No answer in time (after the resends).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The agent cannot be reached (name not resolved, port closed, network down).
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    /// The answer could not be decoded.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The agent answered with an error status.
    #[error("agent error {name} ({status}) at varbind {index}")]
    Agent {
        /// RFC 3416 error-status.
        status: u32,
        /// Its name.
        name: &'static str,
        /// error-index.
        index: u32,
    },
    /// SNMPv3 authentication or privacy failed.
    #[error("SNMPv3 security: {0}")]
    Security(String),
    /// The request itself is wrong (an OID that cannot be encoded, a method for the version).
    #[error("{0}")]
    Request(String),
}

impl ClientError {
    /// True for errors that say the agent did not answer (the device is away).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Timeout(_) | ClientError::Unreachable(_))
    }
}

/// RFC 3416 error-status names.
pub fn status_name(s: u32) -> &'static str {
    match s {
        1 => "tooBig",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        7 => "wrongType",
        8 => "wrongLength",
        9 => "wrongEncoding",
        10 => "wrongValue",
        11 => "noCreation",
        12 => "inconsistentValue",
        13 => "resourceUnavailable",
        14 => "commitFailed",
        15 => "undoFailed",
        16 => "authorizationError",
        17 => "notWritable",
        18 => "inconsistentName",
        _ => "unknown",
    }
}

/// One request PDU.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// GET of these OIDs.
    Get(&'a [Vec<u64>]),
    /// GETNEXT of one OID.
    GetNext(&'a [u64]),
    /// GETBULK.
    Bulk {
        /// OIDs, the non-repeaters first.
        oids: &'a [Vec<u64>],
        /// How many of `oids` are non-repeaters.
        non_repeaters: u32,
        /// Repetitions.
        max_repetitions: u32,
    },
    /// SET.
    Set(&'a [(Vec<u64>, SetValue)]),
}

fn map_err(e: snmp2::Error) -> ClientError {
    match e {
        snmp2::Error::Send | snmp2::Error::Receive => {
            ClientError::Unreachable("the agent's port refused the datagram".into())
        }
        snmp2::Error::AuthFailure(k) => ClientError::Security(format!("{k:?}")),
        snmp2::Error::Crypto(c) => ClientError::Security(c),
        other => ClientError::Malformed(other.to_string()),
    }
}

/// Sends one PDU on `s` and copies the answer.
async fn exchange(
    s: &mut AsyncSession,
    op: Op<'_>,
) -> Result<(u32, u32, Vec<VarBind>), snmp2::Error> {
    let bad = |_| snmp2::Error::ValueOutOfRange;
    let pdu = match op {
        Op::Get(oids) => {
            let owned: Vec<Oid<'static>> = oids
                .iter()
                .map(|o| Oid::from(o).map_err(bad))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&Oid<'_>> = owned.iter().collect();
            let p = if refs.len() == 1 {
                s.get(refs[0]).await?
            } else {
                s.get_many(&refs).await?
            };
            return Ok((p.error_status, p.error_index, varbinds(&p)));
        }
        Op::GetNext(o) => {
            let o = Oid::from(o).map_err(bad)?;
            s.getnext(&o).await?
        }
        Op::Bulk {
            oids,
            non_repeaters,
            max_repetitions,
        } => {
            let owned: Vec<Oid<'static>> = oids
                .iter()
                .map(|o| Oid::from(o).map_err(bad))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&Oid<'_>> = owned.iter().collect();
            s.getbulk(&refs, non_repeaters, max_repetitions).await?
        }
        Op::Set(values) => {
            let owned: Vec<(Oid<'static>, &SetValue)> = values
                .iter()
                .map(|(o, v)| Oid::from(o).map(|o| (o, v)).map_err(bad))
                .collect::<Result<_, _>>()?;
            let refs: Vec<(&Oid<'_>, snmp2::Value<'_>)> =
                owned.iter().map(|(o, v)| (o, v.as_snmp())).collect();
            s.set(&refs).await?
        }
    };
    Ok((pdu.error_status, pdu.error_index, varbinds(&pdu)))
}

/// A client of one agent. Not shared: each poll task and each downlink request has its own.
#[derive(Debug)]
pub struct Client {
    target: Arc<Target>,
    sessions: HashMap<String, Box<AsyncSessionBox>>,
    next_id: i32,
}

/// snmp2's session does not implement `Debug`.
struct AsyncSessionBox(AsyncSession);

impl std::fmt::Debug for AsyncSessionBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AsyncSession")
    }
}

impl Client {
    /// A client; sessions open on the first request.
    pub fn new(target: Arc<Target>) -> Client {
        Client {
            target,
            sessions: HashMap::new(),
            next_id: fastrand_id(),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn open(
        &mut self,
        community: &str,
        timeout: Duration,
    ) -> Result<AsyncSession, ClientError> {
        let t = &self.target;
        let dest = (t.host.as_str(), t.port);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1_000_003);
        let io =
            |e: std::io::Error| ClientError::Unreachable(format!("{}:{}: {e}", t.host, t.port));
        let s = match t.version {
            Version::V1 => AsyncSession::new_v1(dest, community.as_bytes(), id)
                .await
                .map_err(io)?,
            Version::V2c => AsyncSession::new_v2c(dest, community.as_bytes(), id)
                .await
                .map_err(io)?,
            Version::V3 => {
                let sec = t
                    .security
                    .clone()
                    .ok_or_else(|| ClientError::Request("SNMPv3 without a user".into()))?;
                let mut s = AsyncSession::new_v3(dest, id, sec).await.map_err(io)?;
                match tokio::time::timeout(timeout, s.init()).await {
                    Err(_) => return Err(ClientError::Timeout(timeout)),
                    Ok(Err(e)) => return Err(map_err(e)),
                    Ok(Ok(())) => {}
                }
                s
            }
        };
        Ok(s)
    }

    /// Sends one PDU with the client's resends; `Ok` is the answer's varbinds (an error
    /// status is [`ClientError::Agent`]).
    pub async fn request(
        &mut self,
        community: Option<&str>,
        timeout: Option<Duration>,
        op: Op<'_>,
    ) -> Result<Vec<VarBind>, ClientError> {
        let community = community.unwrap_or(&self.target.community).to_string();
        let timeout = timeout.unwrap_or(self.target.timeout);
        let mut last = ClientError::Timeout(timeout);
        let mut auth_retry = true;
        let mut attempt = 0;
        while attempt <= self.target.retries {
            attempt += 1;
            let mut session = match self.sessions.remove(&community) {
                Some(s) => s,
                None => match self.open(&community, timeout).await {
                    Ok(s) => Box::new(AsyncSessionBox(s)),
                    Err(e @ ClientError::Timeout(_)) => {
                        last = e;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match tokio::time::timeout(timeout, exchange(&mut session.0, op)).await {
                Err(_) => last = ClientError::Timeout(timeout),
                Ok(Ok((0, _, binds))) => {
                    self.sessions.insert(community, session);
                    return Ok(binds);
                }
                Ok(Ok((status, index, _))) => {
                    self.sessions.insert(community, session);
                    return Err(ClientError::Agent {
                        status,
                        name: status_name(status),
                        index,
                    });
                }
                Ok(Err(snmp2::Error::AuthUpdated)) if auth_retry => {
                    // The v3 engine's boots/time moved: the session has learnt them, repeat.
                    auth_retry = false;
                    attempt -= 1;
                    self.sessions.insert(community.clone(), session);
                }
                Ok(Err(snmp2::Error::RequestIdMismatch)) => {
                    last = ClientError::Malformed("an answer to an earlier request".into());
                }
                // A closed port, a security failure, an undecodable answer: resending the same
                // request would not help.
                Ok(Err(e)) => return Err(map_err(e)),
            }
        }
        Err(last)
    }

    /// GET of one OID.
    pub async fn get(
        &mut self,
        c: Option<&str>,
        t: Option<Duration>,
        o: &[u64],
    ) -> Result<MethodResult, ClientError> {
        let oids = [o.to_vec()];
        let binds = self.request(c, t, Op::Get(&oids)).await?;
        let v = binds
            .into_iter()
            .next()
            .map(|b| b.value)
            .ok_or_else(|| ClientError::Malformed("an answer without varbinds".into()))?;
        Ok(MethodResult::Scalar(v))
    }

    /// GET of several OIDs in one request.
    pub async fn multiget(
        &mut self,
        c: Option<&str>,
        t: Option<Duration>,
        oids: &[Vec<u64>],
    ) -> Result<MethodResult, ClientError> {
        let binds = self.request(c, t, Op::Get(oids)).await?;
        Ok(MethodResult::List(
            binds.into_iter().map(|b| b.value).collect(),
        ))
    }

    /// GETNEXT of one OID.
    pub async fn getnext(
        &mut self,
        c: Option<&str>,
        t: Option<Duration>,
        o: &[u64],
    ) -> Result<MethodResult, ClientError> {
        let binds = self.request(c, t, Op::GetNext(o)).await?;
        Ok(MethodResult::Map(binds.into_iter().take(1).collect()))
    }

    /// Every varbind under `base` by GETNEXT, or by GETBULK of `bulk` repetitions (v2c/v3).
    /// A walk that finds nothing under `base` reads `base` itself (as `snmpwalk` does), so a
    /// walk of a scalar instance gives its value.
    pub async fn walk(
        &mut self,
        c: Option<&str>,
        t: Option<Duration>,
        base: &[u64],
        bulk: Option<u32>,
        out: &mut Vec<VarBind>,
    ) -> Result<(), ClientError> {
        let start = out.len();
        let bulk = bulk.filter(|_| self.target.version != Version::V1);
        let mut cur = base.to_vec();
        'outer: while out.len() < MAX_WALK_VARBINDS {
            let binds = match bulk {
                Some(n) => {
                    let oids = [cur.clone()];
                    self.request(
                        c,
                        t,
                        Op::Bulk {
                            oids: &oids,
                            non_repeaters: 0,
                            max_repetitions: n.max(1),
                        },
                    )
                    .await
                }
                None => self.request(c, t, Op::GetNext(&cur)).await,
            };
            let binds = match binds {
                Ok(b) => b,
                // v1's end of the MIB.
                Err(ClientError::Agent { status: 2, .. }) => break,
                Err(e) => return Err(e),
            };
            if binds.is_empty() {
                break;
            }
            for b in binds {
                if b.value == SnmpValue::EndOfMibView || !b.oid.starts_with(base) || b.oid <= cur {
                    break 'outer;
                }
                cur.clone_from(&b.oid);
                out.push(b);
            }
        }
        if out.len() == start {
            let oids = [base.to_vec()];
            if let Ok(binds) = self.request(c, t, Op::Get(&oids)).await {
                out.extend(binds.into_iter().filter(|b| !b.value.is_exception()));
            }
        }
        Ok(())
    }

    /// GETBULK: `scalars` once, `repeating` `max` times; every varbind in one map.
    pub async fn bulkget(
        &mut self,
        c: Option<&str>,
        t: Option<Duration>,
        scalars: &[Vec<u64>],
        repeating: &[Vec<u64>],
        max: u32,
    ) -> Result<MethodResult, ClientError> {
        if self.target.version == Version::V1 {
            return Err(ClientError::Request("bulkget needs SNMP v2c or v3".into()));
        }
        let mut oids = scalars.to_vec();
        oids.extend_from_slice(repeating);
        let binds = self
            .request(
                c,
                t,
                Op::Bulk {
                    oids: &oids,
                    non_repeaters: u32::try_from(scalars.len()).unwrap_or(u32::MAX),
                    max_repetitions: max.max(1),
                },
            )
            .await?;
        Ok(MethodResult::Map(binds))
    }

    /// SET of several OIDs in one request; the agent's answer as a map.
    pub async fn set(
        &mut self,
        c: Option<&str>,
        t: Option<Duration>,
        values: &[(Vec<u64>, SetValue)],
    ) -> Result<Vec<VarBind>, ClientError> {
        self.request(c, t, Op::Set(values)).await
    }
}

/// A starting request id that differs between clients and runs.
fn fastrand_id() -> i32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = COUNTER.fetch_add(7919, std::sync::atomic::Ordering::Relaxed);
    (nanos ^ n.wrapping_mul(2_654_435_761)) as i32 & 0x3fff_ffff
}
