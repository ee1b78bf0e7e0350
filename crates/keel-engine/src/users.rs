//! `-u user[:group]` and `--group-add` resolved the way docker resolves
//! them: names looked up in the image's `/etc/passwd` and `/etc/group`,
//! numbers taken as they are, supplementary groups from the group file,
//! and the home directory for `HOME`. Pure: the caller reads the files.

use crate::error::{Error, Result};
pub use keel_image::users::{GroupEntry, PasswdEntry, parse_group, parse_passwd};

/// The user a container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From the passwd entry ("/" when there is none).
    pub home: String,
}

/// Resolves `spec` (`""` is root) and `group_add` against the files'
/// entries. A name that is not there is an error, with docker's words.
pub fn resolve(
    spec: &str,
    group_add: &[String],
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ExecUser> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let mut resolved = ExecUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    let entry = if user.is_empty() {
        passwd.iter().find(|e| e.uid == 0)
    } else if let Ok(uid) = user.parse::<u32>() {
        resolved.uid = uid;
        passwd.iter().find(|e| e.uid == uid)
    } else {
        let found = passwd.iter().find(|e| e.name == user).ok_or_else(|| {
            Error::invalid(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        })?;
        Some(found)
    };
    if let Some(entry) = entry {
        resolved.uid = entry.uid;
        resolved.gid = entry.gid;
        if !entry.home.is_empty() {
            resolved.home = entry.home.clone();
        }
    }
    match group {
        Some(group) if !group.is_empty() => {
            resolved.gid = lookup_group(group, groups)?;
        }
        _ => {
            // The groups the user is a member of, when it has a name.
            if let Some(entry) = entry {
                for g in groups {
                    if g.members.iter().any(|m| m == &entry.name) && g.gid != resolved.gid {
                        resolved.additional_gids.push(g.gid);
                    }
                }
            }
        }
    }
    for group in group_add {
        let gid = lookup_group(group, groups)?;
        if !resolved.additional_gids.contains(&gid) {
            resolved.additional_gids.push(gid);
        }
    }
    Ok(resolved)
}

fn lookup_group(group: &str, groups: &[GroupEntry]) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| {
            Error::invalid(format!(
                "unable to find group {group}: no matching entries in group file"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment\n\
        www:x:33:33:www:/var/www:/bin/false\n\
        broken line\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        www:x:33:\n\
        audio:x:29:app,www\n\
        video:x:44:app\n\
        app:x:1000:\n\
        staff:x:50:\n";

    fn resolve_with(spec: &str, add: &[&str]) -> Result<ExecUser> {
        let add: Vec<String> = add.iter().map(|s| s.to_string()).collect();
        resolve(spec, &add, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn parses_the_files() {
        let passwd = parse_passwd(PASSWD);
        assert_eq!(passwd.len(), 4);
        assert_eq!(passwd[3].home, "/home/app");
        let groups = parse_group(GROUP);
        assert_eq!(groups[2].members, ["app", "www"]);
    }

    #[test]
    fn resolves_users_as_docker() {
        let root = resolve_with("", &[]).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let app = resolve_with("app", &[]).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, [29, 44]);
        assert_eq!(app.home, "/home/app");
        // A known uid takes its entry's gid and groups.
        let by_uid = resolve_with("33", &[]).unwrap();
        assert_eq!(
            (by_uid.uid, by_uid.gid, by_uid.additional_gids.clone()),
            (33, 33, vec![29])
        );
        // An unknown uid runs with gid 0 and home /.
        let unknown = resolve_with("4242", &[]).unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        // An explicit group replaces the primary and drops the file's groups.
        let grouped = resolve_with("app:staff", &[]).unwrap();
        assert_eq!((grouped.gid, grouped.additional_gids.len()), (50, 0));
        assert_eq!(resolve_with("1000:7", &[]).unwrap().gid, 7);
        let added = resolve_with("app", &["staff", "99", "audio"]).unwrap();
        assert_eq!(added.additional_gids, [29, 44, 50, 99]);
        let err = resolve_with("nobody", &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "unable to find user nobody: no matching entries in passwd file"
        );
        let err = resolve_with("app:nogroup", &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(resolve_with("app", &["nogroup"]).is_err());
    }
}
