package snapshots

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Query parameters ParseURL handles itself; every other one goes to
// redis.ParseURL.
const (
	paramCluster          = "cluster"
	paramSentinelMaster   = "sentinel_master"
	paramSentinelUsername = "sentinel_username"
	paramSentinelPassword = "sentinel_password"
)

// ParseURL turns a Redis URL into client options for redis.NewUniversalClient:
//
//	redis://[user:password@]host[:port][/db][?option=value&...]
//	rediss://...                                 TLS
//	redis://[user:password@]h1:p1,h2:p2,h3:p3    Cluster, seeded by these nodes
//	redis://host:port?cluster=true               Cluster, seeded by one node
//	redis://s1:26379,s2:26379/0?sentinel_master=mymaster
//	                                             a master found through Sentinel
//
// The port defaults to 6379 and the database to 0; Cluster has only
// database 0. User and password authenticate with the data nodes; with
// Sentinel, sentinel_username and sentinel_password authenticate with the
// sentinels. Characters of the password that URLs reserve ('@', ':', '/',
// '?', '#', '%') must be percent-encoded. Other options are go-redis's
// (dial_timeout, read_timeout, pool_size, max_retries, skip_verify, ...; see
// redis.ParseURL); unknown ones are an error. ContextTimeoutEnabled is always
// set, so calls end at their context's deadline.
//
// With rediss:// and several hosts (Cluster, Sentinel) the TLS server name is
// taken from each address dialled, so certificates must name the addresses
// the nodes announce.
//
// Errors match ErrInvalid and never contain the password.
func ParseURL(rawURL string) (*redis.UniversalOptions, error) {
	u, err := splitURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("snapshots: parsing the Redis URL: %w", err)
	}
	uo, err := u.options()
	if err != nil {
		return nil, fmt.Errorf("snapshots: parsing the Redis URL %s: %w", u.redacted(), err)
	}
	return uo, nil
}

// redisURL is a Redis URL split into its parts. The only secret in it is
// password (and the sentinel password in query).
type redisURL struct {
	scheme   string
	username string
	password string
	hasUser  bool
	hosts    []string // host:port, port defaulted
	path     string   // "" or "/db"
	query    url.Values
}

// splitURL splits rawURL by hand rather than with url.Parse: url.Parse
// rejects comma-separated host lists and quotes the whole URL, password
// included, in its errors.
func splitURL(rawURL string) (*redisURL, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || (scheme != "redis" && scheme != "rediss") {
		return nil, fmt.Errorf("%w: it must start with redis:// or rediss://", ErrInvalid)
	}
	if strings.Contains(rest, "#") {
		return nil, fmt.Errorf("%w: it contains '#'; Redis URLs have no fragment, so percent-encode '#' in the password as %%23", ErrInvalid)
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	if strings.Contains(path, "@") || (!strings.Contains(authority, "@") && strings.Contains(tail, "@")) {
		// Most likely a password with a raw '/' or '?' split the URL early.
		// Quote nothing: any part of it may be the password.
		return nil, fmt.Errorf("%w: it has '@' after the host; percent-encode '/', '?' and '@' in the user name and password", ErrInvalid)
	}
	u := &redisURL{scheme: scheme, path: path}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		user, pass, _ := strings.Cut(authority[:i], ":")
		var err1, err2 error
		u.username, err1 = url.PathUnescape(user)
		u.password, err2 = url.PathUnescape(pass)
		if err1 != nil || err2 != nil {
			// The unescape error quotes the bad sequence, which may be part
			// of the password: say where, not what.
			return nil, fmt.Errorf("%w: the user name or password has a '%%' that does not start a %%XX escape; encode '%%' as %%25", ErrInvalid)
		}
		u.hasUser = true
		authority = authority[i+1:]
	}
	if authority == "" {
		return nil, fmt.Errorf("%w: it names no host", ErrInvalid)
	}
	for _, h := range strings.Split(authority, ",") {
		addr, err := hostPort(strings.TrimSpace(h))
		if err != nil {
			return nil, err
		}
		u.hosts = append(u.hosts, addr)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		// Same as above: the query may hold sentinel_password.
		return nil, fmt.Errorf("%w: the query string is not valid URL encoding", ErrInvalid)
	}
	u.query = q
	return u, nil
}

// hostPort validates one host of the list and adds the default port.
func hostPort(h string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("%w: the host list has an empty entry", ErrInvalid)
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: "host" or "[::1]".
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), "6379"
		if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && !strings.HasPrefix(h, "[")) {
			return "", fmt.Errorf("%w: host %q is not host, host:port or [ipv6]:port", ErrInvalid, h)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%w: host %q has an invalid port", ErrInvalid, h)
	}
	if host == "" {
		return "", fmt.Errorf("%w: host %q has no host name", ErrInvalid, h)
	}
	return net.JoinHostPort(host, port), nil
}

// options builds the UniversalOptions: our parameters decide the mode, and
// redis.ParseURL, given a URL without credentials, parses the rest.
func (u *redisURL) options() (*redis.UniversalOptions, error) {
	q := url.Values{}
	for k, v := range u.query {
		q[k] = v
	}
	cluster := false
	if q.Has(paramCluster) {
		switch v := q.Get(paramCluster); v {
		case "true", "1":
			cluster = true
		case "false", "0":
		default:
			return nil, fmt.Errorf("%w: %s=%q; use true or false", ErrInvalid, paramCluster, v)
		}
	}
	explicitNoCluster := q.Has(paramCluster) && !cluster
	master := q.Get(paramSentinelMaster)
	sentinelUser, sentinelPass := q.Get(paramSentinelUsername), q.Get(paramSentinelPassword)
	for _, p := range []string{paramCluster, paramSentinelMaster, paramSentinelUsername, paramSentinelPassword} {
		q.Del(p)
	}
	switch {
	case master != "" && cluster:
		return nil, fmt.Errorf("%w: both %s and %s=true; a URL names either a Sentinel-managed master or a Cluster", ErrInvalid, paramSentinelMaster, paramCluster)
	case master == "" && (sentinelUser != "" || sentinelPass != ""):
		return nil, fmt.Errorf("%w: sentinel credentials without %s", ErrInvalid, paramSentinelMaster)
	case master == "" && len(u.hosts) > 1:
		if explicitNoCluster {
			return nil, fmt.Errorf("%w: %d hosts with %s=false; several hosts mean a Cluster (or Sentinel with %s)", ErrInvalid, len(u.hosts), paramCluster, paramSentinelMaster)
		}
		cluster = true
	}

	simple := u.scheme + "://" + u.hosts[0] + u.path
	if len(q) > 0 {
		simple += "?" + q.Encode()
	}
	o, err := redis.ParseURL(simple)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if cluster && o.DB != 0 {
		return nil, fmt.Errorf("%w: database %d asked of a Cluster, which has only database 0; drop the /%d", ErrInvalid, o.DB, o.DB)
	}
	uo := &redis.UniversalOptions{
		Addrs:                   u.hosts,
		ClientName:              o.ClientName,
		DB:                      o.DB,
		Protocol:                o.Protocol,
		Username:                u.username,
		Password:                u.password,
		SentinelUsername:        sentinelUser,
		SentinelPassword:        sentinelPass,
		MaxRetries:              o.MaxRetries,
		MinRetryBackoff:         o.MinRetryBackoff,
		MaxRetryBackoff:         o.MaxRetryBackoff,
		DialTimeout:             o.DialTimeout,
		ReadTimeout:             o.ReadTimeout,
		WriteTimeout:            o.WriteTimeout,
		ContextTimeoutEnabled:   true,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,
		PipelinePoolSize:        o.PipelinePoolSize,
		PoolFIFO:                o.PoolFIFO,
		PoolSize:                o.PoolSize,
		MaxConcurrentDials:      o.MaxConcurrentDials,
		PoolTimeout:             o.PoolTimeout,
		MinIdleConns:            o.MinIdleConns,
		MaxIdleConns:            o.MaxIdleConns,
		MaxActiveConns:          o.MaxActiveConns,
		ConnMaxIdleTime:         o.ConnMaxIdleTime,
		ConnMaxLifetime:         o.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   o.ConnMaxLifetimeJitter,
		TLSConfig:               o.TLSConfig,
		MasterName:              master,
		IsClusterMode:           cluster,
	}
	if uo.TLSConfig != nil && (cluster || master != "") {
		// Leave the server name to crypto/tls, which takes it from each
		// address dialled: the nodes are not all the first host.
		uo.TLSConfig.ServerName = ""
	}
	return uo, nil
}

// redacted returns the URL with the password replaced, for error messages.
func (u *redisURL) redacted() string {
	var b strings.Builder
	b.WriteString(u.scheme + "://")
	if u.hasUser {
		b.WriteString(url.PathEscape(u.username))
		if u.password != "" {
			b.WriteString(":xxxxx")
		}
		b.WriteByte('@')
	}
	b.WriteString(strings.Join(u.hosts, ","))
	b.WriteString(u.path)
	if len(u.query) > 0 {
		q := url.Values{}
		for k, v := range u.query {
			q[k] = v
		}
		if q.Has(paramSentinelPassword) {
			q.Set(paramSentinelPassword, "xxxxx")
		}
		b.WriteString("?" + q.Encode())
	}
	return b.String()
}
