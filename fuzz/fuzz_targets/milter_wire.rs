//! The milter wire (`unspoof_milter::wire`): what the MTA sends, read packet by packet as a
//! connection reads it (`PacketReader`, the length checked before the rest is read), each
//! packet decoded (`parse`), macros split into pairs, connect addresses read.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use unspoof_milter::wire::{Command, PacketReader, connect_ip, macro_pairs, parse};

const MAX_PACKET: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    });
    let mut reader = PacketReader::with_capacity(256);
    let mut stream = data;
    rt.block_on(async {
        loop {
            loop {
                match reader.next(MAX_PACKET) {
                    Ok(Some(packet)) => {
                        assert!(!packet.is_empty() && packet.len() <= MAX_PACKET);
                        if let Ok(command) = parse(packet) {
                            // Every decoded field lies inside the packet, and reading it
                            // further does not fail.
                            if let Command::Macro { data, .. } = &command {
                                for (name, value) in macro_pairs(data) {
                                    let _ = (name.len(), value.len());
                                }
                            }
                            let _ = format!("{command:?}");
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            match reader.fill(&mut stream).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    if let Some((&family, address)) = data.split_first() {
        let _ = connect_ip(family, address);
    }
});
