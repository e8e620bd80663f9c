//! A minimal SMTP client: enough to hand one report to the site's relay (RFC 5321 3.3).

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// How long one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `message` from `from` to `to` through the SMTP server at `relay` (host:port).
pub async fn send(
    relay: &str,
    helo: &str,
    from: &str,
    to: &[String],
    message: &[u8],
) -> Result<String, String> {
    let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(relay))
        .await
        .map_err(|_| format!("{relay}: connection timed out"))?
        .map_err(|e| format!("{relay}: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, 2).await?;
    let command = |line: String| {
        let mut l = line.into_bytes();
        l.extend_from_slice(b"\r\n");
        l
    };
    write
        .write_all(&command(format!("EHLO {helo}")))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut read, 2).await?;
    write
        .write_all(&command(format!("MAIL FROM:<{from}>")))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut read, 2).await?;
    for rcpt in to {
        write
            .write_all(&command(format!("RCPT TO:<{rcpt}>")))
            .await
            .map_err(|e| e.to_string())?;
        expect(&mut read, 2).await?;
    }
    write
        .write_all(b"DATA\r\n")
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut read, 3).await?;
    write
        .write_all(&dot_stuff(message))
        .await
        .map_err(|e| e.to_string())?;
    write.write_all(b".\r\n").await.map_err(|e| e.to_string())?;
    let reply = expect(&mut read, 2).await?;
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(reply)
}

/// Reads one (possibly multi-line) reply and checks its first digit.
async fn expect(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    class: u8,
) -> Result<String, String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(REPLY_TIMEOUT, read.read_line(&mut line))
            .await
            .map_err(|_| "the server did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
    }
    if reply.as_bytes().first() == Some(&(b'0' + class)) {
        Ok(reply.trim_end().to_string())
    } else {
        Err(format!("the server refused: {}", reply.trim_end()))
    }
}

/// CRLF line endings, leading dots doubled (RFC 5321 4.5.2), final CRLF ensured.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let crlf = unspoof_engine::message::to_crlf(message);
    let mut out = Vec::with_capacity(crlf.len() + 16);
    let mut at_line_start = true;
    for &b in crlf.iter() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
