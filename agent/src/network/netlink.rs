//! A blocking rtnetlink client bound to one network namespace.
//!
//! # Design
//! rtnetlink is async; this wraps it in a private current-thread tokio
//! runtime so callers stay blocking. A [`Netlink`] is made on the thread
//! that is already inside the target namespace (see
//! [`super::netns::in_netns`]): the socket belongs to the namespace it was
//! created in. Netlink errors become `io::Error`s carrying the kernel's
//! errno, so callers can match `ENODEV`/`EEXIST`.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, BorrowedFd},
};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
    packet_route::{
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::RouteScope,
    },
};
use tokio::runtime::Runtime;

use super::NetworkError;

/// What berth needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `dummy`, ...); `None` for physical
    /// interfaces and `lo`.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's
    /// namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_IFALIAS` (`ip link set DEV alias TEXT`).
    pub alias: Option<String>,
    pub up: bool,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            peer_index: None,
            alias: None,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Link(peer) => link.peer_index = Some(*peer),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => link.alias = Some(alias.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A netlink connection in the calling thread's network namespace.
pub struct Netlink {
    runtime: Runtime,
    handle: Handle,
    /// Names the namespace in errors ("node netns", a netns file path).
    netns: String,
}

impl Netlink {
    /// Connects in the calling thread's network namespace.
    ///
    /// # Errors
    /// If the runtime or the socket cannot be created.
    pub fn connect(netns: &str) -> Result<Self, NetworkError> {
        let err = |cause| NetworkError::Netlink { op: "connecting".to_owned(), netns: netns.to_owned(), cause };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(err)?;
        // The socket registers with the runtime's reactor, so it is made
        // inside the runtime's context.
        let (connection, handle, _) = {
            let _ctx = runtime.enter();
            rtnetlink::new_connection().map_err(err)?
        };
        runtime.spawn(connection);
        Ok(Self { runtime, handle, netns: netns.to_owned() })
    }

    fn err(&self, op: String) -> impl FnOnce(rtnetlink::Error) -> NetworkError + '_ {
        move |e| NetworkError::Netlink { op, netns: self.netns.clone(), cause: to_io(e) }
    }

    /// The interface called `name`, if any.
    ///
    /// # Errors
    /// On netlink errors other than "no such device".
    pub fn link(&self, name: &str) -> Result<Option<Link>, NetworkError> {
        let mut request = self.handle.link().get().match_name(name.to_owned()).execute();
        match self.runtime.block_on(request.try_next()) {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.err(format!("looking up interface {name}"))(e)),
        }
    }

    /// Every interface.
    ///
    /// # Errors
    /// On netlink errors.
    pub fn links(&self) -> Result<Vec<Link>, NetworkError> {
        let request = self.handle.link().get().execute();
        let msgs: Vec<LinkMessage> =
            self.runtime.block_on(request.try_collect()).map_err(self.err("listing interfaces".to_owned()))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Creates the veth pair `name` (here) ↔ `peer` (in the namespace
    /// `peer_netns`, created there directly so the name never exists here).
    ///
    /// # Errors
    /// On netlink errors, e.g. `EEXIST` when either name is taken.
    pub fn add_veth(&self, name: &str, peer: &str, peer_netns: BorrowedFd<'_>) -> Result<(), NetworkError> {
        // The kernel resolves the fd in this process's fd table, which the
        // borrow keeps open until the request completes.
        let peer_msg =
            LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_owned()).setns_by_fd(peer_netns.as_raw_fd());
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        self.runtime
            .block_on(self.handle.link().add(msg).execute())
            .map_err(self.err(format!("creating veth {name} (peer {peer})")))
    }

    /// Deletes interface `index`; `false` if it was already gone.
    ///
    /// # Errors
    /// On netlink errors other than "no such device".
    pub fn delete_link(&self, link: &Link) -> Result<bool, NetworkError> {
        match self.runtime.block_on(self.handle.link().del(link.index).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(self.err(format!("deleting interface {}", link.name))(e)),
        }
    }

    /// Sets interface `link` up.
    ///
    /// # Errors
    /// On netlink errors.
    pub fn set_up(&self, link: &Link) -> Result<(), NetworkError> {
        let msg = LinkUnspec::new_with_index(link.index).up().build();
        self.runtime
            .block_on(self.handle.link().set(msg).execute())
            .map_err(self.err(format!("setting {} up", link.name)))
    }

    /// Sets the alias of `link`.
    ///
    /// # Errors
    /// On netlink errors.
    pub fn set_alias(&self, link: &Link, alias: &str) -> Result<(), NetworkError> {
        let msg = LinkUnspec::new_with_index(link.index).alias(alias).build();
        self.runtime
            .block_on(self.handle.link().set(msg).execute())
            .map_err(self.err(format!("setting the alias of {} to {alias:?}", link.name)))
    }

    /// Adds (or refreshes) `ip/prefix_len` on `link`.
    ///
    /// # Errors
    /// On netlink errors.
    pub fn replace_address(&self, link: &Link, ip: Ipv4Addr, prefix_len: u8) -> Result<(), NetworkError> {
        let request = self.handle.address().add(link.index, IpAddr::V4(ip), prefix_len).replace();
        self.runtime
            .block_on(request.execute())
            .map_err(self.err(format!("adding address {ip}/{prefix_len} to {}", link.name)))
    }

    /// Adds or replaces the main-table route `dst/prefix_len` out of `link`,
    /// via `gateway` or (without one) directly on the link (scope link).
    ///
    /// # Errors
    /// On netlink errors.
    pub fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix_len: u8,
        link: &Link,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetworkError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new().output_interface(link.index);
        if prefix_len > 0 {
            builder = builder.destination_prefix(dst, prefix_len);
        }
        builder = match gateway {
            Some(gw) => builder.gateway(gw),
            None => builder.scope(RouteScope::Link),
        };
        let via = gateway.map(|gw| format!(" via {gw}")).unwrap_or_default();
        self.runtime
            .block_on(self.handle.route().add(builder.build()).replace().execute())
            .map_err(self.err(format!("adding route {dst}/{prefix_len}{via} dev {}", link.name)))
    }
}

/// The errno of a netlink error reply, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
