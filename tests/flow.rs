//! End to end over real sockets: a store writes to the shopper alias, the shopper gets it
//! from the store alias; the shopper replies, the store gets it from the shopper alias.
//! Neither ever sees the other's real address, and the conversation threads.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_to_shopper_and_reply_back() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("order-1001").await;
    let shopper_alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let store_alias = thread["store_alias"].as_str().unwrap().to_owned();
    assert!(store_alias.starts_with("acme."), "{store_alias}");
    assert!(shopper_alias.ends_with("@relay.test"));

    // The store writes from its own mail server, with the headers real mail has.
    let store_mail = b"Received: from mx.acme.example (mx.acme.example [203.0.113.7])\r\n\
        by relay.test; Mon, 23 Nov 2026 10:00:00 +0000\r\n\
        X-Originating-IP: [203.0.113.7]\r\n\
        From: Acme Orders <orders@acme.example>\r\n\
        Sender: clerk@acme.example\r\n\
        Reply-To: support@acme.example\r\n\
        To: Jane <SHOPPER>\r\n\
        Cc: warehouse@acme.example\r\n\
        Subject: Your order 1001 has shipped\r\n\
        Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
        Message-ID: <ship-1001@mailer.acme.example>\r\n\
        Disposition-Notification-To: clerk@acme.example\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        Hello Jane,\r\n\
        .your parcel is on its way.\r\n"
        .to_vec();
    let store_mail = String::from_utf8(store_mail).unwrap().replace("SHOPPER", &shopper_alias);
    let mut c = Client::ready(relay.smtp()).await;
    let r = c.send("orders@acme.example", &[&shopper_alias], store_mail.as_bytes()).await;
    assert_eq!(r.code, 250, "{}", r.text);
    assert!(r.text.contains("2.0.0"), "{}", r.text);

    let got = sink.wait_for(1, WAIT).await;
    let to_shopper = &got[0];
    assert_eq!(to_shopper.rcpt_to, vec!["jane.doe@shopper.example"]);
    assert!(
        to_shopper.mail_from.starts_with("bounce+") && to_shopper.mail_from.ends_with("@relay.test"),
        "envelope sender is a VERP address of the relay: {}",
        to_shopper.mail_from
    );
    assert_eq!(to_shopper.header("From").unwrap(), format!("\"Acme Shop\" <{store_alias}>"));
    assert_eq!(to_shopper.header("Reply-To").unwrap(), format!("<{store_alias}>"));
    assert_eq!(to_shopper.header("To").unwrap(), "\"Jane Doe\" <jane.doe@shopper.example>");
    assert_eq!(to_shopper.header("Subject").unwrap(), "Your order 1001 has shipped");
    assert!(to_shopper.header("List-Unsubscribe").unwrap().contains("/r/"));
    assert_eq!(to_shopper.header("List-Unsubscribe-Post").unwrap(), "List-Unsubscribe=One-Click");
    let text = to_shopper.text();
    for hidden in [
        "acme.example",
        "203.0.113.7",
        "Received:",
        "X-Originating-IP",
        "Sender:",
        "Cc:",
        "Disposition-Notification-To",
    ] {
        assert!(!text.contains(hidden), "{hidden} leaked to the shopper:\n{text}");
    }
    assert!(
        text.ends_with("\r\n\r\nHello Jane,\r\n.your parcel is on its way.\r\n"),
        "body byte-for-byte:\n{text}"
    );
    let relay_msgid = to_shopper.header("Message-ID").unwrap();
    assert!(relay_msgid.ends_with("@relay.test>"), "{relay_msgid}");

    // The shopper replies from their real address to the store alias.
    let reply = format!(
        "From: Jane Doe <jane.doe@shopper.example>\r\nTo: \"Acme Shop\" <{store_alias}>\r\n\
         Subject: Re: Your order 1001 has shipped\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\n\
         Message-ID: <reply-1@janes-laptop.shopper.example>\r\nIn-Reply-To: {relay_msgid}\r\n\
         References: {relay_msgid}\r\nReceived: from janes-laptop ([198.51.100.23])\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Thanks! Write to me at jane.doe@shopper.example if anything changes.\r\n\r\n\
         On Monday Acme wrote:\r\n> Hello Jane,\r\n"
    );
    let r = c.send("jane.doe@shopper.example", &[&store_alias], reply.as_bytes()).await;
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221).await;

    let got = sink.wait_for(2, WAIT).await;
    let to_store = &got[1];
    assert_eq!(to_store.rcpt_to, vec!["support@acme.example"]);
    assert_eq!(to_store.header("From").unwrap(), format!("\"Jane Doe via Test Market\" <{shopper_alias}>"));
    assert_eq!(to_store.header("To").unwrap(), "\"Acme Shop\" <support@acme.example>");
    // The store's own message id comes back to it, so its mail client threads the reply.
    assert_eq!(to_store.header("In-Reply-To").unwrap(), "<ship-1001@mailer.acme.example>");
    assert_eq!(to_store.header("References").unwrap(), "<ship-1001@mailer.acme.example>");
    let store_sees_msgid = to_store.header("Message-ID").unwrap();
    assert!(store_sees_msgid.ends_with("@relay.test>"), "{store_sees_msgid}");
    let text = to_store.text().to_lowercase();
    for hidden in ["jane.doe@shopper.example", "shopper.example", "janes-laptop", "198.51.100.23"] {
        assert!(!text.contains(hidden), "{hidden} leaked to the store:\n{text}");
    }
    assert!(text.contains(&format!("write to me at {shopper_alias}")), "{text}");

    relay.stop().await;
}
