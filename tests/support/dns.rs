//! A small authoritative DNS server on loopback UDP, serving a zone the test fills in
//! (TXT, MX, A, PTR, anything read from a zone file). The relay is pointed at it with
//! `dns.nameservers`, so SPF, DKIM, DMARC and MX lookups are real DNS queries over a real
//! socket.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
    /// Names answered with SERVFAIL, to play a broken DNS.
    failing: Vec<String>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

impl DnsServer {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().unwrap();
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let response = answer(&query, &z.lock().unwrap());
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self { addr, zone, task }
    }

    /// The `dns.nameservers` entry for the relay.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    fn add(&self, name: &str, t: RecordType, data: RData) {
        self.zone.lock().unwrap().records.entry((key(name), t)).or_default().push(data);
    }

    /// A TXT record; long values are split into 255-byte strings as DNS requires.
    pub fn txt(&self, name: &str, value: &str) {
        let chunks = value.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        self.add(name, RecordType::TXT, RData::TXT(TXT::new(chunks)));
    }

    /// Any record, e.g. one read from a zone file.
    pub fn record(&self, name: &str, data: RData) {
        let t = data.record_type();
        self.add(name, t, data);
    }

    pub fn mx(&self, name: &str, preference: u16, exchange: &str) {
        let exchange = Name::from_ascii(key(exchange)).expect("mx name");
        self.add(name, RecordType::MX, RData::MX(MX::new(preference, exchange)));
    }

    pub fn a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RecordType::A, RData::A(A(ip)));
    }

    /// Every query for `name` gets SERVFAIL from now on.
    pub fn fail(&self, name: &str) {
        self.zone.lock().unwrap().failing.push(key(name));
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

fn answer(query: &Message, zone: &Zone) -> Message {
    let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    for q in &query.queries {
        response.add_query(q.clone());
        let name = key(&q.name().to_ascii());
        if zone.failing.contains(&name) {
            response.metadata.response_code = ResponseCode::ServFail;
            continue;
        }
        match zone.records.get(&(name.clone(), q.query_type())) {
            Some(records) => {
                for r in records {
                    response.add_answer(Record::from_rdata(q.name().clone(), 60, r.clone()));
                }
            }
            None if zone.records.keys().any(|(n, _)| *n == name) => {}
            None => response.metadata.response_code = ResponseCode::NXDomain,
        }
    }
    response
}
