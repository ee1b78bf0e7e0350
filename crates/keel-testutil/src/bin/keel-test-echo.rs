//! A tiny echo server for the network tests, built static so that it can
//! be bound into a busybox container (whose `nc` has no UDP):
//!
//!   keel-test-echo udp PORT   answer each datagram with "udp:" + it
//!   keel-test-echo tcp PORT   answer each connection's first line with "tcp:" + it
//!
//! It prints `listening` once bound, and serves until killed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(kind), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse::<u16>().ok()))
    else {
        eprintln!("usage: keel-test-echo udp|tcp PORT");
        std::process::exit(2);
    };
    match kind.as_str() {
        "udp" => {
            let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
            println!("listening");
            let mut buffer = [0u8; 2048];
            loop {
                if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                    let mut reply = b"udp:".to_vec();
                    reply.extend_from_slice(&buffer[..n]);
                    let _ = socket.send_to(&reply, from);
                }
            }
        }
        "tcp" => {
            let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
            println!("listening");
            for stream in listener.incoming().flatten() {
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_ok() {
                    let _ = (&stream).write_all(format!("tcp:{line}").as_bytes());
                }
            }
        }
        _ => {
            eprintln!("usage: keel-test-echo udp|tcp PORT");
            std::process::exit(2);
        }
    }
}
