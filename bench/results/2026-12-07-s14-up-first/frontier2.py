import numpy as np, sys
N_FF=1536
def load(p):
    d=np.fromfile(p,dtype=np.float32).reshape(-1,2,N_FF)
    return d[:,0,:].astype(np.float64), d[:,1,:].astype(np.float64)
G,UPB,DN=396,396,370
NB=G+UPB+DN
S1=np.arange(0.10,0.41,0.01)
def curve(score,h,cost):
    """for each s1, errors for every s2 count; return list of (bytes, err)"""
    n=h.shape[1]; T=h.shape[0]; rows=np.arange(T)[:,None]
    o=np.argsort(score,axis=1); h2=h**2; tot=h2.sum()
    pts=[]
    for s1 in S1:
        k1=int(round(s1*n))
        skip=np.zeros_like(h,dtype=bool); skip[rows,o[:,:k1]]=True
        e1=(h2*skip).sum()
        rest=np.sort(np.where(skip,np.inf,h2),axis=1)  # ascending, skipped at end
        cum=np.cumsum(rest[:,:n-k1],axis=1).sum(0)  # total error adding j smallest
        for k2 in range(k1, int(0.6*n), 8):
            e=(e1+(cum[k2-k1-1] if k2>k1 else 0))/tot
            b=(k1*(UPB+DN)+(k2-k1)*DN)/(n*NB)-cost
            pts.append((e,b))
    pts.sort()
    best=-1; fr=[]
    for e,b in pts:
        if b>best: best=b; fr.append((e,b))
    return fr
def at(fr,E):
    ok=[b for e,b in fr if e<=E]; return max(ok) if ok else float('nan')
for L in sys.argv[1:]:
    Ac,Uc=load(f'/tmp/s14/exp/cal-L{L}.f32'); At,Ut=load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac,Uc,At,Ut=Ac[1:],Uc[1:],At[1:],Ut[1:]
    ht=At*Ut; mu=np.abs(Uc).mean(0)
    C=Uc.T@Uc/len(Uc); w,V=np.linalg.eigh(C); V=V[:,::-1]
    preds={'upw':(np.abs(At)*mu,0.0)}
    for r in [8,16,32]:
        P=V[:,:r]; sig=np.sqrt(((Uc-Uc@P@P.T)**2).mean(0)); uh=Ut@P@P.T
        preds[f'r{r}q4']=(np.abs(At)*np.sqrt(uh**2+sig**2),(576*r+1536*r)*4.5/8/(1536*NB))
    preds['oracle']=(np.abs(ht),0.0)
    frs={k:curve(s,ht,c) for k,(s,c) in preds.items()}
    base=at(frs['upw'],1.0)
    # error levels: those of upw at 18%, 21%, 24% bytes
    levels=[min(e for e,b in frs['upw'] if b>=x) for x in (0.16,0.19,0.22,0.25)]
    for E in levels:
        print(f'L{L} err<={E:.4f}: '+'  '.join(f'{k} {100*at(f,E):.1f}%' for k,f in frs.items()), flush=True)
